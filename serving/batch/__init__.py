"""Batch scoring: a leads file in, a scores file out, in bounded memory whatever its size.

    leadscore score --leads leads.csv [--actions actions.csv] --out scores.csv
        [--model models:/lead-readiness@champion | FOLDER] [--as-of 2026-03-01T00:00:00Z]
        [--chunk-size 50000] [--reasons 3] [--sort] [--to-log] [--no-progress]
        [--engine local | spark [--features-out FOLDER] [--spark-master URL]]

One row per lead: ``lead_id``, ``p_<stage>`` per scored stage, ``score``, ``grade``,
``category``, ``reasons`` (the top ``--reasons`` in words, as
:meth:`ReadinessModel.score_matrix` writes them; absent with ``--reasons 0``, which is
several times faster) and ``model_version``. CSV or Parquet by the output's suffix; CSV
floats are written at full precision (read them back with ``float_precision="round_trip"``
to get the exact probabilities).

The package, one module per job:

* :mod:`serving.batch.job`: one run on this machine, in the order below;
* :mod:`serving.batch.shards`: ids seen so far, hash-partitioned shards;
* :mod:`serving.batch.sort`: the external sort (sorted runs merged in bounded memory);
* :mod:`serving.batch.output`: the scores file, renamed into place when complete;
* :mod:`serving.batch.log`: ``--to-log``, the scores written to the scoring log;
* :mod:`serving.batch.cli`: ``leadscore score``'s options and exit statuses;
* :mod:`serving.batch.spark`: the same scores computed on Apache Spark.

Reading a file in chunks and checking each chunk is the feature package's business
(:mod:`features.chunks`, :func:`features.loaders.parse_leads`), so a bad file gets the
same one-line refusal as training's loaders give, with row numbers as file lines.

How memory stays bounded, and why this way:

* **Leads are streamed** in chunks of ``--chunk-size`` rows and every chunk goes through
  the loaders' own checks. Ids repeated *across* chunks are caught by remembering a
  64-bit hash of every id (8 bytes a lead).
* **Actions are hash-partitioned.** An actions file is exported in time order, not lead
  order; requiring it sorted by lead id would push an external sort of the biggest file
  onto every user. Instead one streaming pass writes the leads and the actions into
  ``K`` temporary Parquet shards by ``hash(lead_id) mod K`` (``K = leads / chunk
  size``, more when actions are dense), and each shard is scored on its own. Refused:
  an action whose lead is not in the leads file (while sharding, with its line) and a
  shard too big to score at once (only when one lead has millions of actions).
* **Output keeps the input order.** Streamed chunks are written as they are scored;
  shards are written as runs sorted by input line and merged back into file order.
* ``--sort`` (score descending, then lead id): every chunk is sorted and written as a
  Parquet run, and the runs are merged batch by batch.
* **Nothing half-done is left behind.** The output is written under a temporary name and
  renamed when complete; with ``--to-log`` the scores reach the log only once the whole
  file scored.

Exit status of ``leadscore score``: 0 done, 2 bad input (a refused file, a bad option;
the message is one line on stderr), 1 anything else (the model cannot be loaded, the
output cannot be written).
"""
