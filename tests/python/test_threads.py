"""Thousands of broadcasts from several Python threads all arrive, in per-thread order."""

import threading


def test_broadcasts_from_many_threads_all_arrive(server, client_factory):
    c = client_factory(server.port)
    c.subscribe("load")
    threads, per_thread = 4, 1500
    errors = []

    def work(t):
        try:
            for i in range(per_thread):
                server.broadcast("load", "tick", {"t": t, "i": i})
                if i % 100 == 0:
                    server.subscriber_count("load")  # interleave blocking queries
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    seen = {t: -1 for t in range(threads)}
    for _ in range(threads * per_thread):
        d = c.recv(10)["data"]
        assert d["i"] == seen[d["t"]] + 1, "per-thread order kept"
        seen[d["t"]] = d["i"]
    for t in ts:
        t.join()
    assert not errors
    assert all(v == per_thread - 1 for v in seen.values())
    assert server.stats()["messages_delivered"] >= threads * per_thread


def test_concurrent_queries_and_close_do_not_crash():
    import vxevents
    srv = vxevents.events_plugin()
    srv.listen("127.0.0.1", 0)
    stop = threading.Event()
    outcomes = []

    def hammer():
        while not stop.is_set():
            try:
                srv.subscriber_count("c")
                srv.broadcast("c", "e", 1)
            except vxevents.VxClosedError:
                outcomes.append("closed")
                return

    ts = [threading.Thread(target=hammer) for _ in range(3)]
    for t in ts:
        t.start()
    srv.close()
    stop.set()
    for t in ts:
        t.join(10)
        assert not t.is_alive()
