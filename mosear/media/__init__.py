"""In-process media probing and decoding with PyAV (FFmpeg's libraries); see :mod:`mosear.media.decode`."""

from mosear.media.decode import DecodedClip, MediaError, ProbeInfo, decode_clip, probe, resize_frame

__all__ = ["DecodedClip", "MediaError", "ProbeInfo", "decode_clip", "probe", "resize_frame"]
