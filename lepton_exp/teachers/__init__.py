"""Teachers: the train-once cache (``cache``) and loading from files, W&B or the cache (``load``)."""
