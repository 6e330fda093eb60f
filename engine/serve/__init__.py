"""The model server: TensorFlow Serving's REST API over a workspace's runs (`python -m engine serve`).

`app` holds the routes, `models` which runs are served and their loaded artifacts, `batching`
the server-side batches, `inputs` what a request may carry, `server` the start-up rules, and
`client` the HTTP client the dashboard and the tests use. `monitor` summarises the prediction
log for the Monitor page and `python -m engine monitor`.
"""
