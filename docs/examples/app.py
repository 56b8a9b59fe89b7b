import sys, time
cache = []
def load(n):                      # keeps what it reads: a leak
    for i in range(n):
        cache.append(bytes(1000 + i % 7))
        if i % 2000 == 0:
            time.sleep(0.02)
def report(n):                    # a big temporary list: the peak
    rows = [str(i) * 50 for i in range(n)]
    time.sleep(0.3)
    return len(rows)
load(40_000)
report(300_000)
time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 0.3)
