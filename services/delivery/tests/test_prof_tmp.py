import time, asyncio
from mailgw_libs import bus, topics
from mailgw_delivery.app import build
from .support import settings_for
from aiokafka import AIOKafkaConsumer

async def test_prof(fresh_kafka, redis_url, unique, sinks):
    s = settings_for(fresh_kafka, redis_url, 1, unique)
    rt = build(s)
    await bus.ensure_topics(s, rt.topic_specs)
    for kw in [dict(rebalance_timeout_ms=2000), dict(session_timeout_ms=6000), dict(session_timeout_ms=6000, rebalance_timeout_ms=1000)]:
        t0 = time.monotonic()
        c = AIOKafkaConsumer(bootstrap_servers=fresh_kafka, group_id="g" + str(time.time()), **kw)
        c.subscribe(topics=["mail.actions"])
        await c.start()
        print("plain consumer", kw, time.monotonic() - t0)
        await c.stop()
    t0 = time.monotonic()
    cs = []
    for i in range(3):
        c = AIOKafkaConsumer(bootstrap_servers=fresh_kafka, group_id="p" + str(i))
        c.subscribe(topics=["mail.actions"])
        cs.append(c)
    await asyncio.gather(*(c.start() for c in cs))
    print("3 parallel", time.monotonic() - t0)
    for c in cs: await c.stop()
