"""The web console of ``saga ui``: a page and a JSON API over a saga store.

- :mod:`.views`: what the API answers, as plain functions of an open store (no HTTP);
- :mod:`.diagram`: a saga on its flow's diagram (the compiled machine, laid out, with the
  states the saga went through and the one it is on or failed at);
- :mod:`.security`: the Host, token and CSRF checks, and the security headers;
- :mod:`.app`: the Starlette app (the ``web`` extra: ``pip install 'sagactor[web]'``);
- ``static/``: the page (HTML, CSS and JS shipped in the package: no CDN).

:mod:`sagas.commands.ui` serves it (``saga ui``). Only :mod:`.app` needs Starlette.
"""
