# SPDX-License-Identifier: MIT
"""textproc.py: a data-processing workload of many short strings for the allocator benchmarks.

Generates CSV-like log records in chunks, then parses them as a log-crunching script does: split
lines and fields, strip and lower-case them, convert numbers, count by key in dicts, join fields
back into normalised lines, and group, sort and summarise. Nearly every object is a short-lived
str of a few to a few dozen bytes. Deterministic: prints `checksum=<hex>` of the normalised
output and the summaries. usage: textproc.py [scale=1]
"""
import sys
import zlib
from random import Random

HOSTS = ["web-%02d" % i for i in range(12)]
PATHS = ["/", "/login", "/logout", "/api/v1/items", "/api/v1/items/{id}", "/api/v1/users/{id}",
         "/static/app.js", "/static/app.css", "/search", "/cart", "/checkout", "/health"]
METHODS = ["GET", "GET", "GET", "POST", "PUT", "DELETE"]
AGENTS = ["Mozilla/5.0", "curl/8.4", "python-requests/2.31", "Googlebot/2.1", "okhttp/4.12"]


def make_chunk(rng, first, n):
    lines = []
    for i in range(first, first + n):
        path = rng.choice(PATHS).replace("{id}", str(rng.randrange(10000)))
        status = rng.choice((200, 200, 200, 200, 301, 304, 404, 500))
        fields = ["2026-11-%02dT%02d:%02d:%02d" % (1 + i // 400000 % 28, i // 3600 % 24, i // 60 % 60, i % 60),
                  " " + rng.choice(HOSTS) + " ", rng.choice(METHODS), path, str(status),
                  str(rng.randrange(40, 90000)), "%.3f" % (rng.random() * 2), '"%s"' % rng.choice(AGENTS),
                  "user=%s" % ("u%04d" % rng.randrange(3000) if rng.random() < 0.7 else "-")]
        lines.append(",".join(fields))
    return "\n".join(lines) + "\n"


def crunch(text, counts, by_host, slow):
    out = []
    for line in text.splitlines():
        if not line:
            continue
        ts, host, method, path, status, size, secs, agent, user = line.split(",")
        host = host.strip().lower()
        agent = agent.strip('"').split("/")[0].lower()
        user = user.partition("=")[2]
        route = "/".join("{id}" if part.isdigit() else part for part in path.split("/"))
        key = method + " " + route
        counts[key] = counts.get(key, 0) + 1
        counts["status:" + status] = counts.get("status:" + status, 0) + 1
        counts["agent:" + agent] = counts.get("agent:" + agent, 0) + 1
        h = by_host.get(host)
        if h is None:
            h = by_host[host] = [0, 0, set()]
        h[0] += 1
        h[1] += int(size)
        if user != "-":
            h[2].add(user)
        t = float(secs)
        if t > 1.9:
            slow.append((t, ts, host, key))
        out.append("|".join((ts[:10], ts[11:], host, key, status, user, agent)))
    return "\n".join(out)


def run(scale):
    rng = Random(99)
    crc = 0
    counts, by_host, slow = {}, {}, []
    total = max(2000, int(150000 * scale))
    done = 0
    while done < total:
        n = min(20000, total - done)
        normal = crunch(make_chunk(rng, done, n), counts, by_host, slow)
        crc = zlib.crc32(normal.encode(), crc)
        done += n
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:40]
    hosts = sorted((h, v[0], v[1], len(v[2])) for h, v in by_host.items())
    slow.sort(reverse=True)
    summary = repr((top, hosts, slow[:50], len(slow)))
    return zlib.crc32(summary.encode(), crc)


if __name__ == "__main__":
    scale = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    print("checksum=%08x" % run(scale))
