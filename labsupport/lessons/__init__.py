"""One package per module of the course, with that module's experiments::

    from labsupport.lessons.m05_async_messaging import ThreeWays

A lesson imports the runtime, the broker and the kit; some build on an earlier lesson's
experiment (module 10's synchronous checkout uses module 04's breaker). Never the course tooling.
"""
