"""Interop with an independent WebRTC stack: aiortc publishes video to a Switchboard
conversation and a second aiortc peer receives it through the node and decodes the frames.

Usage: aiortc_interop.py BASE_URL TOKEN [--codec vp8|h264] [--frames N] [--timeout SECONDS]

It prints one line with the number of frames decoded and exits 0, or prints what failed and
exits 1. Everything it talks to is the node at BASE_URL (loopback only): no STUN server.
"""

import argparse
import asyncio
import fractions
import json
import sys
import time
import urllib.error
import urllib.request
import uuid

import aioice.ice
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, VideoStreamTrack
from av import VideoFrame

# aioice leaves loopback addresses out of its host candidates; the node listens on loopback
# only in tests, so offer 127.0.0.1 explicitly.
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

WIDTH, HEIGHT = 320, 240


class PatternTrack(VideoStreamTrack):
    """Synthetic video: a gradient whose brightness follows the frame number."""

    def __init__(self):
        super().__init__()
        self.number = 0

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        frame = VideoFrame(WIDTH, HEIGHT, "yuv420p")
        level = (self.number * 4) % 200 + 20
        frame.planes[0].update(bytes([level]) * (WIDTH * HEIGHT))
        frame.planes[1].update(bytes([128]) * (WIDTH * HEIGHT // 4))
        frame.planes[2].update(bytes([128]) * (WIDTH * HEIGHT // 4))
        frame.pts = pts
        frame.time_base = time_base
        self.number += 1
        return frame


class Api:
    def __init__(self, base, token):
        self.base = base.rstrip("/")
        self.token = token

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={
                "Authorization": "Bearer " + self.token,
                "Content-Type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            raise SystemExit(
                f"{method} {path} failed with {error.code}: {error.read().decode(errors='replace')}"
            )


async def gathered(pc):
    """Waits for ICE gathering so the SDP carries every candidate (aiortc does not trickle)."""
    while pc.iceGatheringState != "complete":
        await asyncio.sleep(0.05)


async def run(base, token, codec, frames_wanted, timeout):
    api = Api(base, token)
    suffix = uuid.uuid4().hex[:8]
    conversation = api.call("POST", "/v0.1/conversations", {"name": f"aiortc-{suffix}"})["id"]
    members = {}
    for name in ("publisher", "viewer"):
        api.call("POST", "/v0.1/users", {"name": f"aiortc-{name}-{suffix}"})
        members[name] = api.call(
            "POST",
            f"/v0.1/conversations/{conversation}/members",
            {"user_name": f"aiortc-{name}-{suffix}", "action": "join", "channel": {"type": "app"}},
        )["id"]

    config = RTCConfiguration(iceServers=[])
    publisher = RTCPeerConnection(config)
    transceiver = publisher.addTransceiver(PatternTrack(), direction="sendonly")
    # Offer only the codec under test, so the node must forward exactly that one.
    mime_type = "video/" + {"vp8": "VP8", "h264": "H264"}[codec]
    transceiver.setCodecPreferences(
        [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == mime_type]
    )
    await publisher.setLocalDescription(await publisher.createOffer())
    await gathered(publisher)
    published = api.call(
        "POST",
        f"/v0.1/conversations/{conversation}/rtc",
        {
            "from": members["publisher"],
            "body": {"offer": {"type": "offer", "sdp": publisher.localDescription.sdp}},
        },
    )
    await publisher.setRemoteDescription(
        RTCSessionDescription(sdp=published["body"]["answer"]["sdp"], type="answer")
    )

    viewer = RTCPeerConnection(config)
    viewer.addTransceiver("video", direction="recvonly")
    decoded = []
    done = asyncio.Event()

    @viewer.on("track")
    def on_track(track):
        async def consume():
            try:
                while len(decoded) < frames_wanted:
                    frame = await track.recv()
                    decoded.append((frame.width, frame.height))
            except MediaStreamError:
                pass
            done.set()

        asyncio.ensure_future(consume())

    await viewer.setLocalDescription(await viewer.createOffer())
    await gathered(viewer)
    subscribed = api.call(
        "POST",
        f"/v0.1/conversations/{conversation}/rtc",
        {
            "from": members["viewer"],
            "body": {
                "offer": {"type": "offer", "sdp": viewer.localDescription.sdp},
                "subscribe": {"rtc_id": published["rtc_id"]},
            },
        },
    )
    await viewer.setRemoteDescription(
        RTCSessionDescription(sdp=subscribed["body"]["answer"]["sdp"], type="answer")
    )

    started = time.monotonic()
    try:
        await asyncio.wait_for(done.wait(), timeout)
    except asyncio.TimeoutError:
        pass
    elapsed = time.monotonic() - started
    await viewer.close()
    await publisher.close()

    if len(decoded) < frames_wanted:
        print(
            f"aiortc interop failed: decoded {len(decoded)} of {frames_wanted} frames in "
            f"{elapsed:.1f} s (publisher {publisher.connectionState}, viewer {viewer.connectionState})"
        )
        return 1
    sizes = sorted(set(decoded))
    if sizes != [(WIDTH, HEIGHT)]:
        print(f"aiortc interop failed: decoded frame sizes {sizes}, expected {WIDTH}x{HEIGHT}")
        return 1
    print(
        f"aiortc interop: {len(decoded)} {codec} frames of {WIDTH}x{HEIGHT} decoded "
        f"in {elapsed:.1f} s"
    )
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_url")
    parser.add_argument("token")
    parser.add_argument("--codec", choices=["vp8", "h264"], default="vp8")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--timeout", type=float, default=20.0)
    arguments = parser.parse_args()
    sys.exit(
        asyncio.run(
            run(
                arguments.base_url,
                arguments.token,
                arguments.codec,
                arguments.frames,
                arguments.timeout,
            )
        )
    )


if __name__ == "__main__":
    main()
