"""sift_client's keepalive settings against sift-serve's ping enforcement."""

from __future__ import annotations

import time

import grpc

from sift_client import Client
from sift_client.channel import DEFAULT_RETRY, channel_options, open_channel
from tests.conftest import LiveServer


def test_keepalive_is_accepted_by_the_server(live_server: LiveServer) -> None:
    """sift-serve closes a connection that pings more than its enforcement allows (GOAWAY too_many_pings:
    the channel leaves READY; round_robin reconnects at once). The client's keepalive settings, with the
    ping interval cut to 1 s (grpc's floor) so the test is short, keep the connection through calls and an
    idle spell. The control channel, which also pings every second while idle (the server allows one idle
    ping per 30 s), is closed by the server after a few strikes."""
    ours = channel_options(DEFAULT_RETRY, keepalive_time_ms=1000, keepalive_timeout_ms=1000)
    idle_pings = [(key, 1 if key == "grpc.keepalive_permit_without_calls" else value) for key, value in ours]
    ready = grpc.ChannelConnectivity.READY

    def dropped(seen: list[grpc.ChannelConnectivity]) -> bool:
        """Whether the connection left READY once it had been READY."""
        return ready in seen and any(state != ready for state in seen[seen.index(ready) :])

    states: dict[str, list[grpc.ChannelConnectivity]] = {"ours": [], "idle_pings": []}
    channels = {
        "ours": open_channel(live_server.address, ours),
        "idle_pings": open_channel(live_server.address, idle_pings),
    }
    try:
        for name, channel in channels.items():
            channel.subscribe(states[name].append, try_to_connect=True)
            Client(channel=channel).classify_intent("oak")
        end = time.monotonic() + 1.5
        while time.monotonic() < end:  # calls in flight on ours: pings interleave with answers
            Client(channel=channels["ours"]).classify_intent("oak table")
        end = time.monotonic() + 20  # generous: a loaded CI machine delays the strikes
        while not dropped(states["idle_pings"]):  # ours idles meanwhile
            assert time.monotonic() < end, f"the server kept a connection pinging while idle: {states}"
            time.sleep(0.1)
        time.sleep(0.5)
        assert Client(channel=channels["ours"]).classify_intent("oak").categories
    finally:
        for channel in channels.values():
            channel.close()
    assert states["ours"][-1] == ready and not dropped(states["ours"]), states["ours"]
