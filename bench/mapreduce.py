"""MapReduce word count on Nubis against multiprocessing.Pool, same workers.

    python -m nubis.bench.mapreduce [--mb 50] [--workers 1 2] [--json]

The corpus is real text: the standard library's own .py files, concatenated
in path order into 4 MiB blobs and repeated until it reaches --mb (the
library is about 30 MB here, so 50 MB reads part of it twice). Both sides
run the same job (nubis.services.mapreduce.examples.WORD_COUNT: map per
line, a combiner, partitioning by key hash, a reducer per partition) with
the same code (nubis.services.mapreduce.runtime), one task per 4 MiB split:

- Nubis: the input is already in blobs; the time runs from `submit` (queues
  filled, workers spawned) until every reduce task has committed.
- Pool: the input is already in memory; the time runs from handing the
  splits to Pool(W).map until the reduced output of every partition is
  back, with intermediate data pickled between processes as Pool does.

Each worker count runs Nubis and the pool in turn, `--rounds` times; the
report gives the median times, their ratio, and the speed-up from 1 to
2 workers on each side. Both outputs are checked to be equal.
"""

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time

from nubis.services.mapreduce import examples, read_output, runtime, submit, wait

SPLIT = 4 << 20
SPEC = dict(job="bench", source=examples.WORD_COUNT, mapper="map",
            combiner="combine", reducer="reduce", spill_values=1 << 20)

_funcs = None


def _functions(spec: dict) -> runtime.Functions:
    global _funcs
    if _funcs is None:
        _funcs = runtime.Functions(spec)
    return _funcs


def _pool_map(args) -> list:
    spec, key, data = args
    funcs, counters = _functions(spec), {}
    parts = [[] for _ in range(spec["reducers"])]

    def spill(buffer):
        for r, chunk in enumerate(runtime.partition_buffer(
                buffer, funcs, spec["reducers"], counters)):
            parts[r].append(chunk)

    records = ((key, line) for line in runtime.split_lines(data, True))
    runtime.map_records(records, funcs, counters, spill, spec["spill_values"])
    return parts


def _pool_reduce(args) -> bytes:
    spec, chunks = args
    out = runtime.reduce_groups(chunks, _functions(spec), {})
    return runtime.encode_output(out)


def run_pool(corpus: dict, workers: int, reducers: int) -> tuple[float, bytes]:
    spec = dict(SPEC, reducers=reducers)
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        start = time.perf_counter()
        mapped = pool.map(_pool_map, [(spec, k, v) for k, v in corpus.items()],
                          chunksize=1)
        chunks = [[c for parts in mapped for c in parts[r]]
                  for r in range(reducers)]
        outputs = pool.map(_pool_reduce, [(spec, c) for c in chunks], chunksize=1)
        elapsed = time.perf_counter() - start
    return elapsed, b"".join(outputs)


def run_nubis(client, workers: int, reducers: int, round_: int) -> tuple:
    output = f"bench-wc/{workers}-{round_}-{time.time_ns()}/"
    start = time.perf_counter()
    job = submit(client, examples.WORD_COUNT, mapper="map", combiner="combine",
                 reducer="reduce", input_prefix="bench-corpus/",
                 output_prefix=output, reducers=reducers, workers=workers,
                 split_bytes=SPLIT)
    status = wait(client, job, poll=0.02)
    elapsed = time.perf_counter() - start
    if status.state != "succeeded":
        raise RuntimeError(f"job {job} {status.state}: {status.error}")
    return elapsed, dict(read_output(client, output)), status


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from nubis.bench.servers import Fleet
    from nubis.client import Client

    corpus = examples.stdlib_sources(args.mb << 20, SPLIT)
    size = sum(map(len, corpus.values()))
    results = {"corpus_bytes": size, "splits": len(corpus),
               "cpus": os.cpu_count(), "runs": {}}
    with Fleet() as fleet:
        kernel = fleet.kernel(grpc=False)
        with Client(kernel["urls"]["zmq+ipc"], kernel["token"]) as c:
            for key, data in corpus.items():
                c.blob.put(f"bench-corpus/{key}", data)
            for w in args.workers:
                reducers = 2 * w
                nubis, pool = [], []
                for r in range(args.rounds):
                    t, got, status = run_nubis(c, w, reducers, r)
                    nubis.append(t)
                    t, data = run_pool(corpus, w, reducers)
                    pool.append(t)
                    want = dict(json.loads(line) for line in data.splitlines())
                    if got != want:
                        raise RuntimeError("nubis and the pool disagree")
                results["runs"][w] = {
                    "nubis_s": statistics.median(nubis),
                    "pool_s": statistics.median(pool),
                    "ratio": statistics.median(nubis) / statistics.median(pool),
                    "words": status.counters["map_output_records"],
                    "nubis_all": nubis, "pool_all": pool}
    runs = results["runs"]
    if 1 in runs and 2 in runs:
        results["speedup_nubis"] = runs[1]["nubis_s"] / runs[2]["nubis_s"]
        results["speedup_pool"] = runs[1]["pool_s"] / runs[2]["pool_s"]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"word count over {size / 1e6:.1f} MB ({len(corpus)} splits), "
          f"{results['cpus']} cpus, median of {args.rounds}")
    for w, r in runs.items():
        print(f"  {w} worker(s): nubis {r['nubis_s']:.2f}s  pool "
              f"{r['pool_s']:.2f}s  ratio {r['ratio']:.2f} (goal <= 1.25)")
    if "speedup_nubis" in results:
        print(f"  speed-up 1 -> 2 workers: nubis {results['speedup_nubis']:.2f}x"
              f"  pool {results['speedup_pool']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
