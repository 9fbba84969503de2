"""Eddy's public face: the ``eddy`` command, which starts and reads the services.

It stands above the services (``eddy label-ui`` runs labeling's page), so it lives here and
not in ``services/core``, which every service shares and which imports no service.
"""
