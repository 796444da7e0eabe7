ActorPool = None
