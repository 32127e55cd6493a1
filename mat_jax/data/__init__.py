"""Face records in, device batches out: the record schema and the tf.data pipeline.

Importing this package imports nothing heavy: `records` (the schema, which data_prep
writes with) needs no TensorFlow, and the tf.data modules import it only when used.

Modules, each with one job:

* `records`: the TFRecord schema, shard naming and summary that data_prep writes.
* `tf_env`: the one import of TensorFlow for mat_jax (accelerators hidden from it) and the
  tf.data options every pipeline runs with.
* `decode`: decoding, centre crop and resize, `preprocess_eval`, `eval_images`, `normalize`.
* `augment`: the training augmentation, `preprocess_train`.
* `sources`: the records root and balance mode of a config; this process's files and batch.
* `sizes`: record and class counts, `train_steps_per_epoch`.
* `errors`: `CorruptDataError` naming the bad file, `check_files`.
* `train_data`: `create_train_iterator` (seeded epochs, exact resume) and `benchmark`.
* `eval_data`: `create_eval_iterator` (every record once, padded and masked).
"""
