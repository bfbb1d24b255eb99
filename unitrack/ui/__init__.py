"""The web view (``unitrack ui``), the one-file report (``unitrack report``) and notebook charts
(``unitrack.plot``): one figure module drawn by plotly.js, over the run catalog and the series primitive.

Nothing here is imported by ``import unitrack``; starlette, uvicorn and plotly are loaded only by the modules
that serve or draw.
"""
