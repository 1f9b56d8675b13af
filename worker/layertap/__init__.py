"""LayerTap: extract language-model activations for sparse-autoencoder research."""

__version__ = "0.1.0"


def open(uri: str, **kwargs):
    """Open an activation run written by LayerTap (local path or gs://)."""
    from layertap.store.reader import open_run

    return open_run(uri, **kwargs)
