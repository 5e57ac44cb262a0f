"""Teachers: the train-once cache (``cache``) and loading them from files, W&B or the cache
(``load``)."""
