"""The records that flow through the pipeline, at the bottom of the package's layers.

spec -> model -> checkpoint -> per-example results -> entry -> tables: the specs a run starts from
(:mod:`~robustdeq.records.defense`, :mod:`~robustdeq.records.protocol`, with their
:mod:`~robustdeq.records.solver` and :mod:`~robustdeq.records.threat` settings) and the entry it
ends in (:mod:`~robustdeq.records.entry`, its per-example codec :mod:`~robustdeq.records.outcomes`
and its :mod:`~robustdeq.records.flags`), with the training-seed spread beside the entries
(:mod:`~robustdeq.records.seeds`), kept by the atomic file store (:mod:`~robustdeq.records.store`),
and the numbers published elsewhere that readers show beside the entries
(:mod:`~robustdeq.records.published`). Each is a strict pydantic model read with one-line errors
(:mod:`~robustdeq.records.parse`); their JSON Schemas are in ``docs/schema/`` (:mod:`~robustdeq.records.schemas`).

Nothing here imports the compute layers above (torch, the models, training, evaluation): a record
knows nothing of how it is produced or read. Names it holds that other layers own (a model family,
a recipe, an attack, a data set) are checked by their registries where they are used.
"""
