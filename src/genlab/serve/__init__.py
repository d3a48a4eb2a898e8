"""genlab serve: the live explorer in the browser (an optional extra, `pip install genlab[serve]`).

    genlab serve runs/vae zoo:ddpm-mnist5k-cond     # http://127.0.0.1:8765/

`create_app(runs)` builds the Starlette app (`genlab.serve.app`); the views' computations are in
`genlab.serve.explorer`; the page is `static/`. See docs/serve.md for the views and the API.
"""
