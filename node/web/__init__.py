"""The live web dashboard of a swarm (``spargo monitor/lab/sim --web``), extra ``spargo[web]``.

``state`` folds the same presence and status events as the terminal monitor
(``node.watch_view.SwarmView``, which it wraps) into what the page draws: per-round history,
edges that carried traffic, alerts, stable positions. ``server`` serves the page and a
read-only WebSocket (starlette + uvicorn, in a thread of its own); ``feed`` connects a swarm
(MQTT), a lab or a simulation to it; ``options`` holds the ``--web*`` flags, importable
without the extra. The browser side (``static/``) draws with uPlot, shipped in the package.
"""
