"""Webhooks: score-change events sent to subscribers, signed per Standard Webhooks.

* :mod:`.signing`: the ``webhook-id`` / ``webhook-timestamp`` / ``webhook-signature``
  headers and the ``whsec_`` secrets;
* :mod:`.targets`: which URLs may be called (http(s) only, no internal addresses unless
  allowed: the SSRF guard), checked at subscription time and again at every try;
* :mod:`.sender`: one POST to a pinned address with bounded timeouts, no redirects;
* :mod:`.worker`: the background thread reading the outbox (``scorelog.webhooks``).
"""
