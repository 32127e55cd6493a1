"""Face records in, device batches out: the record schema and the tf.data pipeline.

Importing this package imports nothing heavy: `records` (the schema, which data_prep
writes with) needs no TensorFlow, and the tf.data modules import it only when used.
"""
