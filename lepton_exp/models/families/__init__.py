"""Model families: one module per family (an entry of
``lepton_exp.config.registries.MODELS``) with ``TEXT`` (whether it reads token ids),
``matches(cfg)`` (whether ``model.name`` / ``model.*`` select it) and ``build(cfg, info, key)``.
A family of new CNN architectures registers them with timm (``@register_model``) on import and
builds through timm: adding one is its module plus a ``conf/model/<name>.yaml`` per size."""
