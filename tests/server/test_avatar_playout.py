"""The avatar's voice buffer (server/pacing.py ``Playout``, ``played``) on a simulated clock: blocks that come
late by less than the margin leave the voice continuous; one later than that is one gap, shared by the frames
and the voice; a track that was itself late while its item lay ready catches up instead of opening a gap."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from streamgen.server.pacing import Playout, PlayoutConfig, played

FPS, BLOCK_S, CHUNK_S = 16.0, 0.25, 0.02


class Sim:
    """A wall clock that moves only when a track sleeps, and blocks that become available at given times."""

    def __init__(self, arrivals: list[float]) -> None:
        self.now = 0.0
        self.arrivals = arrivals  # block b is in hand from arrivals[b]

    def clock(self) -> float:
        return self.now

    async def sleep(self, s: float) -> None:
        self.now += max(s, 0.0)

    def getter(self, media_t: float):
        async def get():
            ready = self.arrivals[int(media_t / BLOCK_S + 1e-9)]
            if ready > self.now:
                self.now = ready  # the track waits for the block
            return media_t
        return get


def play(sim: Sim, playout: Playout, media_times: list[float]) -> list[float]:
    async def run():
        out = []
        for m in media_times:
            _, t, _ = await played(playout, m, sim.getter(m), clock=sim.clock, sleep=sim.sleep)
            out.append(t)
        return out
    return asyncio.run(run())


def jittery_arrivals(blocks: int, jitter_s: float, seed: int = 0) -> list[float]:
    """Block b is ready at its real-time moment plus up to ``jitter_s`` (a voice coming in, a loaded CPU)."""
    rng = np.random.default_rng(seed)
    return [b * BLOCK_S + float(rng.uniform(0, jitter_s)) for b in range(blocks)]


@pytest.mark.parametrize("step_s", [1 / FPS, CHUNK_S])  # the video track's frames and the audio track's 20 ms
def test_late_blocks_within_the_margin_leave_the_voice_continuous(step_s):
    delay = 0.19
    sim = Sim(jittery_arrivals(40, jitter_s=0.18))
    playout = Playout(PlayoutConfig(delay_s=delay))
    media = [i * step_s for i in range(int(39 * BLOCK_S / step_s))]
    times = play(sim, playout, media)
    assert playout.underruns == 0 and playout.gap_s == 0
    # Every item plays at the first one's time plus its media time: no gap, no drift, nothing out of order.
    np.testing.assert_allclose(np.array(times) - times[0], media, atol=1e-9)
    assert times[0] == pytest.approx(sim.arrivals[0] + delay)
    assert [playout.pts(t, 48000) for t in times[:3]] == [round(m * 48000) for m in media[:3]]


def test_a_block_later_than_the_margin_is_one_gap_for_frames_and_voice():
    """Block 4 comes 0.5 s late: it plays ``delay`` after it came, and from then on both tracks' items of the
    same media time play at the same moment (the audio track runs ahead of the video one here)."""
    delay = 0.19
    arrivals = [b * BLOCK_S for b in range(12)]
    arrivals[4:] = [t + 0.5 for t in arrivals[4:]]
    sim = Sim(arrivals)
    playout = Playout(PlayoutConfig(delay_s=delay))
    audio = play(sim, playout, [i * CHUNK_S for i in range(100)])  # 2 s of voice, underrun at block 4
    assert playout.underruns == 1
    late = 4 * BLOCK_S + 0.5 - (delay + 4 * BLOCK_S)  # how late block 4 came for its play time
    assert playout.gap_s == pytest.approx(late + delay)
    i = int(1.0 / CHUNK_S)  # 1.0 s: block 4's first sound
    assert audio[i] - audio[i - 1] == pytest.approx(CHUNK_S + late + delay)
    np.testing.assert_allclose(np.diff(audio[i:]), CHUNK_S, atol=1e-9)  # continuous again after the gap
    video = play(sim, playout, [k / FPS for k in range(16, 28)])  # frames of blocks 4-6 on the same clock
    np.testing.assert_allclose(video, [playout.base + k / FPS for k in range(16, 28)], atol=1e-9)
    assert video[0] == pytest.approx(audio[i])  # block 4's first frame with its first sound


def test_a_track_late_itself_catches_up_without_a_gap():
    playout = Playout(PlayoutConfig(delay_s=0.19))
    first = playout.arrived(0.0, 1.0)
    assert first == pytest.approx(1.19)
    # The item of 0.5 s lay ready; the track asked 0.3 s after its time (the event loop was busy): no gap.
    assert playout.arrived(0.5, 1.99, waited=False) == pytest.approx(1.69)
    assert playout.underruns == 0
    # The same lateness after waiting for the item is an underrun: ``delay`` after it came.
    assert playout.arrived(0.52, 2.01 + 0.3, waited=True) == pytest.approx(2.31 + 0.19)
    assert playout.underruns == 1 and playout.pts(playout.due(0.52), 48000) > playout.pts(1.69, 48000)


def test_playout_config_refuses_negative_values():
    with pytest.raises(ValueError, match="delay_s=-0.1"):
        PlayoutConfig(delay_s=-0.1)
    with pytest.raises(ValueError, match="max_late_s=-1"):
        PlayoutConfig(max_late_s=-1)


def test_each_underrun_widens_the_margin_up_to_its_bound():
    """A source that falls further behind in steps (a loaded machine, a voice in bursts): a step later than
    the margin is an underrun and buys a frame more margin (0.19 s -> 0.44 s at most); a step within the
    margin is absorbed without a gap."""
    cfg = PlayoutConfig(delay_s=3 / FPS, grow_s=1 / FPS, max_delay_s=7 / FPS)
    behind = [0.0] * 4 + [0.3] * 4 + [0.55] * 4 + [0.75] * 4 + [1.0] * 4  # seconds behind real time, per block
    sim = Sim([b * BLOCK_S + late for b, late in enumerate(behind)])
    playout = Playout(cfg)
    play(sim, playout, [i * CHUNK_S for i in range(int((len(behind) - 1) * BLOCK_S / CHUNK_S))])
    # 0.3 behind: a gap (margin 0.19), then blocks play 0.3 + 0.25 behind; 0.55 behind: in time; 0.75: a gap
    # (margin 0.31), blocks play 1.06 behind; 1.0 behind: in time.
    assert [m for m, _ in playout.late] == [1.0, 3.0]
    assert playout.underruns == 2 and playout.delay_s == pytest.approx(5 / FPS)
    bounded = Playout(cfg)
    for k in range(20):
        bounded.arrived(k * BLOCK_S, 100.0 * (k + 1))  # ever later
    assert bounded.underruns == 19 and bounded.delay_s == pytest.approx(7 / FPS)


def test_without_a_live_voice_the_voice_room_stays_empty():
    """``AvatarInput.hold_idle``: the extra blocks a WebRTC avatar buffer may hold are for a live voice's
    margin; on silence the engine keeps the usual lead (4 frames here), so a voice that starts does not wait
    behind pre-generated silence. A live voice is gated by its speech as before."""
    from types import SimpleNamespace

    from streamgen.server.avatar_input import AvatarInput

    now = [0.0]
    queued = [0]
    avatar = AvatarInput(sample_rate=16000, samples_per_frame=2000, frames_per_block=2, radius=2, clock=lambda: now[0])
    avatar.hold_idle(lambda: queued[0], 4)
    session = SimpleNamespace(speech=SimpleNamespace(buffered_samples=lambda: 0))
    assert avatar.ready(session)
    queued[0] = 4
    assert not avatar.ready(session)  # silence: no more than the usual lead
    avatar.push(np.zeros(8000, np.float32))  # 0.5 s of a live voice: (2 + 2) latent frames of speech
    assert avatar.ready(session)  # the voice may use the room
    now[0] = 1.0  # the voice went quiet (LIVE_GAP_S): the usual lead again
    assert not avatar.ready(session)
