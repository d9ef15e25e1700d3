"""MapReduce in user space: splits in blobs, tasks in queues, workers spawned.

    from nubis.services import mapreduce
    status = mapreduce.run(client, mapreduce.examples.WORD_COUNT,
                           mapper="map", combiner="combine", reducer="reduce",
                           input_prefix="corpus/", output_prefix="wc/",
                           reducers=4, workers=2)
    counts = dict(mapreduce.read_output(client, "wc/"))

The mapper, combiner and reducer are functions in the job's source, which
runs in cloud processes (see nubis.services.mapreduce.runtime for how a job
survives a worker killed mid-task without counting anything twice).
"""

from nubis.services.mapreduce import examples
from nubis.services.mapreduce.job import (
    JobFailed,
    JobStatus,
    cleanup,
    jobs,
    read_output,
    run,
    status,
    submit,
    wait,
)
from nubis.services.mapreduce.runtime import run_local

__all__ = ["JobFailed", "JobStatus", "cleanup", "examples", "jobs",
           "read_output", "run", "run_local", "status", "submit", "wait"]
