"""Small helpers shared by the experiment tests."""


def override_config(config, **fields):
  """Sets `a__b__c=value` fields on a locked ml_collections config; returns it.

  Double underscores stand for dots (`data__plain_fraction` ->
  `config.data.plain_fraction`), so overrides read like keyword arguments.
  """
  config.unlock()
  for dotted, value in fields.items():
    node = config
    *parents, leaf = dotted.split('__')
    for p in parents:
      node = node[p]
    node[leaf] = value
  config.lock()
  return config
