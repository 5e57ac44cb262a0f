"""The data sets, one module each (``data=<module name>``; see ``lepton_exp.registry``).

An entry module defines ``Schema`` (its config node: ``DataConfig`` or ``TextDataConfig``
plus its own fields), ``check(cfg)`` (its range checks, one line per problem) and
``build(cfg_data)`` (its data module: a generic one from ``lepton_exp.data.base`` or
``lepton_exp.data.text`` given the set's loading functions). Entries import torch & co. only
inside functions: composing a config imports every entry. Adding a data set is its module
here plus ``conf/data/<name>.yaml`` (``defaults: [/<name>_data_schema@_here_, _self_]``).
"""
