"""subscriber_count / has_subscribers / channels / stats, sync and asyncio."""

import asyncio
import time


def wait_for(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_counts_follow_subscriptions(server, client_factory):
    assert server.subscriber_count("room") == 0
    assert server.has_subscribers("room") is False
    a, b = client_factory(server.port), client_factory(server.port)
    a.subscribe("room")
    b.subscribe("room")
    b.subscribe("other")
    assert server.subscriber_count("room") == 2
    assert server.subscriberCount("other") == 1
    assert server.has_subscribers("room") is True
    assert server.hasSubscribers("room") is True
    assert sorted(server.channels()) == ["other", "room"]
    b.send({"type": "unsubscribe", "channel": "room"})
    wait_for(lambda: server.subscriber_count("room") == 1)
    b.close()
    wait_for(lambda: server.channels() == ["room"])


def test_stats_count_connections(server, client_factory):
    client_factory(server.port)
    client_factory(server.port)
    wait_for(lambda: server.stats()["connections"] == 2)


def test_async_queries_do_not_block_the_event_loop(server, client_factory):
    c = client_factory(server.port)
    c.subscribe("q")

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        t = asyncio.create_task(ticker())
        results = await asyncio.gather(*[server.asubscriber_count("q") for _ in range(200)],
                                       server.ahas_subscribers("q"), server.achannels(),
                                       server.astats())
        t.cancel()
        return results, ticks

    results, ticks = asyncio.run(main())
    assert results[:200] == [1] * 200
    assert results[200] is True and results[201] == ["q"]
    assert results[202]["connections"] == 1
    assert ticks > 0


def test_async_query_error_is_raised_in_the_coroutine(server):
    import pytest
    import vxevents

    async def main():
        await server.asubscriber_count("bad channel!")

    with pytest.raises(vxevents.VxValueError) as ei:
        asyncio.run(main())
    assert ei.value.code == "ECHANNEL"
