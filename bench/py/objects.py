# SPDX-License-Identifier: MIT
"""objects.py: an object-heavy Python workload for the allocator benchmarks.

Class instances, dicts, lists, tuples, strings, JSON dumps and loads, sorting and grouping:
the allocation pattern of ordinary Python code. Run with PYTHONMALLOC=malloc, every object goes
through malloc, free and realloc; without it, through CPython's own pymalloc. Deterministic:
prints `checksum=<hex>` computed from what it built. usage: objects.py [scale=1]
"""
import json
import sys
import zlib
from random import Random


class Order:
    def __init__(self, oid, customer, items, tags):
        self.oid = oid
        self.customer = customer
        self.items = items
        self.tags = tags
        self.notes = []

    def total(self):
        return sum(qty * price for _, qty, price in self.items)

    def to_dict(self):
        return {"id": self.oid, "customer": self.customer, "tags": list(self.tags),
                "items": [{"sku": s, "qty": q, "price": p} for s, q, p in self.items],
                "notes": self.notes}

    @classmethod
    def from_dict(cls, d):
        o = cls(d["id"], d["customer"], [(i["sku"], i["qty"], i["price"]) for i in d["items"]],
                tuple(d["tags"]))
        o.notes = list(d["notes"])
        return o


WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
         "juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo"]


def make_orders(rng, n):
    orders = []
    for oid in range(n):
        customer = "cust-%05d" % rng.randrange(2000)
        items = [("sku-" + rng.choice(WORDS) + "-" + str(rng.randrange(100)), rng.randrange(1, 9),
                  rng.randrange(100, 10000) / 100) for _ in range(rng.randrange(1, 8))]
        tags = tuple(sorted({rng.choice(WORDS) for _ in range(rng.randrange(0, 4))}))
        orders.append(Order(oid, customer, items, tags))
    return orders


def annotate(rng, orders):
    for o in orders:
        for _ in range(rng.randrange(0, 4)):
            o.notes.append(" ".join(rng.choice(WORDS) for _ in range(rng.randrange(2, 9))))


def group_by_customer(orders):
    groups = {}
    for o in orders:
        groups.setdefault(o.customer, []).append(o)
    return {c: (len(os), round(sum(o.total() for o in os), 2)) for c, os in groups.items()}


def word_counts(orders):
    counts = {}
    for o in orders:
        for note in o.notes:
            for w in note.split():
                counts[w] = counts.get(w, 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def round_trip(orders):
    text = json.dumps([o.to_dict() for o in orders], sort_keys=True)
    back = [Order.from_dict(d) for d in json.loads(text)]
    return text, back


def run(scale):
    rng = Random(1234)
    crc = 0
    remaining = max(100, int(24000 * scale))
    rnd = 0
    while remaining > 0:
        orders = make_orders(rng, min(8000, remaining))
        remaining -= len(orders)
        rnd += 1
        annotate(rng, orders)
        groups = group_by_customer(orders)
        top = sorted(groups.items(), key=lambda kv: (-kv[1][1], kv[0]))[:50]
        text, back = round_trip(orders)
        assert len(back) == len(orders)
        index = {(o.customer, o.oid): o for o in back}
        big = [o for o in back if o.total() > 100]
        big.sort(key=lambda o: (o.total(), o.oid))
        summary = {"round": rnd, "top": top, "words": word_counts(back)[:20],
                   "big": [o.oid for o in big[-100:]], "n_index": len(index),
                   "text_len": len(text)}
        crc = zlib.crc32(json.dumps(summary, sort_keys=True).encode(), crc)
        crc = zlib.crc32(text.encode(), crc)
        del orders, back, index, big, text
    return crc


if __name__ == "__main__":
    scale = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    print("checksum=%08x" % run(scale))
