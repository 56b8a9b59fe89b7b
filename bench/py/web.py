# SPDX-License-Identifier: MIT
"""web.py: a web-style request loop for the allocator benchmarks.

Each request is parsed from a raw HTTP-like text (request line, headers, query string, JSON body),
routed to a handler that reads and updates an in-memory store of users and sessions, builds a
response dict and serialises it with json.dumps, as a small JSON API server does; responses are
assembled with headers into one string. Most objects live for one request (a server's typical
allocation pattern); the store grows and is trimmed as sessions expire. Deterministic: prints
`checksum=<hex>` of every response. usage: web.py [scale=1]
"""
import json
import sys
import zlib
from random import Random
from urllib.parse import parse_qs, urlsplit

CITIES = ["Lyon", "Oslo", "Porto", "Graz", "Turku", "Gent", "Brno", "Bergen", "Split", "Cork"]
AGENTS = ["curl/8.4.0", "Mozilla/5.0 (X11; Linux x86_64)", "python-requests/2.31", "Go-http-client/1.1"]


def make_request(rng, i, nusers):
    uid = rng.randrange(nusers)
    kind = rng.random()
    headers = ["Host: api.example.test", "User-Agent: " + rng.choice(AGENTS),
               "Accept: application/json", "X-Request-Id: req-%08d" % i,
               "Cookie: session=s%06d; theme=%s" % (rng.randrange(5000), rng.choice(("dark", "light")))]
    if kind < 0.55:
        path = "/users/%d?fields=name,email,city&verbose=%d" % (uid, rng.randrange(2))
        return "GET %s HTTP/1.1\r\n%s\r\n\r\n" % (path, "\r\n".join(headers))
    if kind < 0.8:
        path = "/search?q=%s&city=%s&limit=%d" % (rng.choice(CITIES).lower(), rng.choice(CITIES),
                                                 rng.randrange(5, 25))
        return "GET %s HTTP/1.1\r\n%s\r\n\r\n" % (path, "\r\n".join(headers))
    body = json.dumps({"user": uid, "items": [{"sku": "sku-%d" % rng.randrange(500), "qty": rng.randrange(1, 5),
                                                "price": rng.randrange(100, 20000) / 100}
                                               for _ in range(rng.randrange(1, 6))],
                       "note": " ".join(rng.choice(CITIES) for _ in range(rng.randrange(0, 6)))})
    headers.append("Content-Type: application/json")
    headers.append("Content-Length: %d" % len(body))
    return "POST /orders HTTP/1.1\r\n%s\r\n\r\n%s" % ("\r\n".join(headers), body)


def parse(raw):
    head, _, body = raw.partition("\r\n\r\n")
    lines = head.split("\r\n")
    method, target, version = lines[0].split(" ")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    cookies = dict(c.strip().split("=", 1) for c in headers.get("cookie", "").split(";") if "=" in c)
    url = urlsplit(target)
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    return {"method": method, "path": url.path, "version": version, "headers": headers,
            "cookies": cookies, "query": query, "body": json.loads(body) if body else None}


class Store:
    def __init__(self, rng, nusers):
        self.users = {}
        self.by_city = {}
        for uid in range(nusers):
            u = self.users[uid] = {"id": uid, "name": "user%05d" % uid, "email": "user%05d@example.test" % uid,
                                   "city": rng.choice(CITIES), "orders": [], "visits": 0}
            self.by_city.setdefault(u["city"], []).append(u)
        self.sessions = {}
        self.next_order = 1

    def touch(self, sid, now):
        s = self.sessions.get(sid)
        if s is None:
            s = self.sessions[sid] = {"id": sid, "created": now, "hits": 0}
        s["hits"] += 1
        s["seen"] = now
        if len(self.sessions) > 3000:  # expire those not seen in the last 2000 requests
            for o in [o for o in self.sessions.values() if o["seen"] < now - 2000]:
                del self.sessions[o["id"]]


def handle(store, req, now):
    store.touch(req["cookies"].get("session", "anon"), now)
    path = req["path"]
    if req["method"] == "GET" and path.startswith("/users/"):
        user = store.users.get(int(path.rsplit("/", 1)[1]))
        if user is None:
            return 404, {"error": "no such user"}
        user["visits"] += 1
        fields = req["query"].get("fields", "name").split(",")
        out = {f: user[f] for f in fields if f in user}
        if req["query"].get("verbose") == "1":
            out["recent_orders"] = [dict(o) for o in user["orders"][-5:]]
            out["visits"] = user["visits"]
        return 200, out
    if path == "/search":
        city, limit = req["query"]["city"], int(req["query"]["limit"])
        hits = store.by_city.get(city, [])[:limit]
        return 200, {"city": city, "count": len(hits),
                     "results": [{"id": u["id"], "name": u["name"], "visits": u["visits"]} for u in hits]}
    if req["method"] == "POST" and path == "/orders":
        body = req["body"]
        user = store.users[body["user"]]
        order = {"order": store.next_order, "items": body["items"], "note": body["note"].upper(),
                 "total": round(sum(i["qty"] * i["price"] for i in body["items"]), 2)}
        store.next_order += 1
        user["orders"].append(order)
        if len(user["orders"]) > 20:
            del user["orders"][:10]
        return 201, {"created": order["order"], "total": order["total"], "user": user["id"]}
    return 400, {"error": "bad request"}


def respond(req, status, payload):
    body = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    reason = {200: "OK", 201: "Created", 400: "Bad Request", 404: "Not Found"}[status]
    headers = ["HTTP/1.1 %d %s" % (status, reason), "Content-Type: application/json",
               "Content-Length: %d" % len(body), "X-Request-Id: " + req["headers"]["x-request-id"],
               "Connection: keep-alive"]
    return "\r\n".join(headers) + "\r\n\r\n" + body


def run(scale):
    rng = Random(4321)
    nusers = 2000
    store = Store(rng, nusers)
    crc = 0
    nreq = max(200, int(20000 * scale))
    for i in range(nreq):
        req = parse(make_request(rng, i, nusers))
        status, payload = handle(store, req, i)
        crc = zlib.crc32(respond(req, status, payload).encode(), crc)
    return crc


if __name__ == "__main__":
    scale = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    print("checksum=%08x" % run(scale))
