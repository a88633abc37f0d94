"""The read-only web view the conductor serves on ``web_listen`` (README, "The web view").

Server-rendered pages (jinja2, autoescaped) kept live with Server-Sent Events, on
aiohttp on the conductor's own event loop; every asset is the conductor's own.

* :mod:`~conductor.web.server`: the listener (HTTPS, client certificate required) and its routes;
* :mod:`~conductor.web.auth`: who is asking, by the Audience's rule; the security headers;
* :mod:`~conductor.web.calls`: the Audience servicer, called for a page;
* :mod:`~conductor.web.pages`, :mod:`~conductor.web.live`: the pages and their event streams;
* :mod:`~conductor.web.streams`: what every event stream shares (limits, heartbeats, endings);
* :mod:`~conductor.web.rows`, :mod:`~conductor.web.filters`, :mod:`~conductor.web.outputtext`,
  :mod:`~conductor.web.pictures`, :mod:`~conductor.web.history`: pure logic.

Imported only when ``web_listen`` is set, so a conductor without it never loads aiohttp.
"""
