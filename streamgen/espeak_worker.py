"""One espeak-ng utterance in a fresh process: ``python espeak_worker.py TEXT VOICE RATE PITCH`` (``streamgen.speech_synth``).

Writes one JSON line (the library's sample rate and the phoneme events: the sample index where each phoneme
starts and its mnemonic) and then the waveform as raw int16 to stdout. Run by path, not as a module, so it
imports only the standard library (it starts in a few tens of milliseconds). Why a process per utterance: libespeak-ng keeps its waveform
generator's state (pitch-period phase, noise generator) from one utterance to the next, which moves phoneme
boundaries by a few milliseconds, so the same arguments give the same samples only from a fresh library.

``espeak-ng --pho`` prints timings only for mbrola voices (not installed); the library's synchronous mode
reports a phoneme event (``espeakEVENT_PHONEME``) for the built-in formant voices too.
"""
import ctypes
import json
import sys

# speak_lib.h: synchronous output, option bits of espeak_Initialize, event types, parameters.
AUDIO_OUTPUT_SYNCHRONOUS = 2
INIT_PHONEME_EVENTS = 0x0001
INIT_DONT_EXIT = 0x8000
EVENT_LIST_TERMINATED, EVENT_PHONEME = 0, 7
PARAM_RATE, PARAM_PITCH = 1, 3
CHARS_UTF8 = 1


class EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", EventId)]


Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(Event))


def synthesise(text: str, voice: str, rate: int, pitch: int) -> tuple[int, list, bytes]:
    try:
        lib = ctypes.CDLL("libespeak-ng.so.1")
    except OSError:
        raise SystemExit("libespeak-ng.so.1 not found: install Debian's espeak-ng (scripts/bootstrap.sh)")
    sample_rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, None, INIT_PHONEME_EVENTS | INIT_DONT_EXIT)
    if sample_rate <= 0:
        raise SystemExit(f"espeak_Initialize failed ({sample_rate})")
    chunks, events = [], []

    def on_synth(wav, count, evs):
        if count > 0:
            chunks.append(ctypes.string_at(wav, count * 2))  # int16 samples
        i = 0
        while evs[i].type != EVENT_LIST_TERMINATED:
            if evs[i].type == EVENT_PHONEME:
                events.append([evs[i].sample, evs[i].id.string.decode("ascii", "replace")])
            i += 1
        return 0

    callback = Callback(on_synth)
    lib.espeak_SetSynthCallback(callback)
    if lib.espeak_SetVoiceByName(voice.encode()) != 0:
        raise SystemExit(f"espeak-ng voice {voice!r} not found")
    lib.espeak_SetParameter(PARAM_RATE, rate, 0)
    lib.espeak_SetParameter(PARAM_PITCH, pitch, 0)
    data = text.encode("utf-8") + b"\0"
    err = lib.espeak_Synth(data, len(data), 0, 1, 0, CHARS_UTF8, None, None)
    lib.espeak_Synchronize()
    if err != 0:
        raise SystemExit(f"espeak_Synth failed ({err}) for text {text!r}")
    return sample_rate, events, b"".join(chunks)


if __name__ == "__main__":
    rate_hz, phoneme_events, samples = synthesise(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    sys.stdout.buffer.write((json.dumps({"sample_rate": rate_hz, "events": phoneme_events}) + "\n").encode())
    sys.stdout.buffer.write(samples)
