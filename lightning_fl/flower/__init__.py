"""lightning-fl on Flower: the same module, data, codecs and server optimizer, with real bytes between processes.

``lightning_fl.flower.apps`` holds the ``server_app`` and ``client_app`` (``pip install lightning-fl[flower]``).
"""
