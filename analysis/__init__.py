"""The video analysis engine, one concern per module.

It is pure: a video path, options, a progress callback and a cancel event go in, a frozen result
comes out, and the only files it writes are artifacts inside the output folder it is given. It
imports nothing from the web service. `railway_video_generator.py` is its thin public facade.
"""
