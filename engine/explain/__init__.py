"""Explanations of single predictions. Importing this package is cheap; the methods import Keras when called.

`methods.METHODS` declares each method once (label, map function, settings, warm-ups, whether it
needs a conv layer); `methods.explain(model, image, "gradcam" | "shap" | "lime")` returns an
`Explanation` with its seconds and deletion/insertion AUCs (`faithfulness`); `gradcam.overlay`
draws a map over an image.
"""
