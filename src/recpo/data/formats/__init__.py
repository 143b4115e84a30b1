"""The on-disk formats of a dataset, one module each, every one read into a
:class:`~recpo.data.records.RecDataset`:

* :mod:`~recpo.data.formats.llara`: LLaRA's ``train_data`` / ``Val_data`` / ``Test_data``
  tables and an item catalogue;
* :mod:`~recpo.data.formats.sdpo_json`: S-DPO's JSON rows, candidates included;
* :mod:`~recpo.data.formats.raw`: raw ``interactions`` (user, item, timestamp) and ``items``;
* :mod:`~recpo.data.formats.catalog`: item catalogues (``id2name.txt``, MovieLens'
  ``u.item``, ...), read by the LLaRA and S-DPO JSON readers.

A format's reader is one function taking keyword arguments; ``conf/data/<name>.yaml``
names it as ``data.source.reader._target_``, and :func:`recpo.data.sources.load_source`
calls it with the keys of ``data.source`` it names (``directory``, the dataset's folder,
is resolved from ``data_dir`` and ``folder``). A new format is a module here and a
``conf/data`` file naming its reader. :mod:`~recpo.data.formats.tables` holds what the
table readers share.
"""
