# SPDX-License-Identifier: MIT
# A threaded, object-heavy workload for CPython under PYTHONMALLOC=malloc (every object through
# malloc, realloc and free). Its output is deterministic, so a run under LD_PRELOAD=libpyalloc.so
# must print exactly what a run on glibc prints.
import hashlib
import json
import random
import re
import sys
import threading

THREADS = 6
ROUNDS = 20


def work(tid, results):
    rnd = random.Random(1000 + tid)
    digest = hashlib.sha256()
    for r in range(ROUNDS):
        d = {}
        for i in range(2000):
            key = "k%d-%d-%s" % (tid, i, "x" * rnd.randrange(0, 40))
            d[key] = [rnd.random(), str(i) * rnd.randrange(1, 30), (i, tid, r), {"n": i}]
        blob = json.dumps(d, sort_keys=True)
        back = json.loads(blob)
        assert back == json.loads(json.dumps(back, sort_keys=True))
        words = re.findall(r"k\d+-\d+", blob)
        lst = sorted(words, key=lambda w: (len(w), w))
        big = bytearray()
        for w in lst[:500]:
            big += w.encode() * 3  # grows through realloc, past the pools
        s = "".join(reversed(lst[:300]))
        digest.update(blob.encode())
        digest.update(bytes(big))
        digest.update(s.encode())
        del d, back, words, lst, big, s
    results[tid] = digest.hexdigest()


def main():
    results = [None] * THREADS
    threads = [threading.Thread(target=work, args=(t, results)) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for tid, h in enumerate(results):
        print(tid, h)
    total = hashlib.sha256("".join(results).encode()).hexdigest()
    print("checksum", total)
    return 0


if __name__ == "__main__":
    sys.exit(main())
