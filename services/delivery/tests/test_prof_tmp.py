import time, logging
from mailgw_libs import bus, topics
from mailgw_delivery.app import build
from .support import settings_for
from aiokafka import AIOKafkaConsumer

async def test_prof(fresh_kafka, redis_url, unique, sinks):
    s = settings_for(fresh_kafka, redis_url, 1, unique)
    rt = build(s)
    await bus.ensure_topics(s, rt.topic_specs)
    t0 = time.monotonic()
    c = AIOKafkaConsumer(bootstrap_servers=fresh_kafka, group_id="g1")
    c.subscribe(topics=["mail.actions"])
    await c.start()
    print("plain consumer", time.monotonic() - t0)
    await c.stop()
    t0 = time.monotonic()
    for sub in rt.broker.subscribers:
        t1 = time.monotonic()
        await sub._ensure_topics()
        print("ensure", time.monotonic() - t1)
