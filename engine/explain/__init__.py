"""Explanations of single predictions. Importing this package is cheap; the methods import Keras when called.

`methods.explain(model, image, "gradcam" | "shap" | "lime")` returns an `Explanation` with its
seconds and deletion/insertion AUCs (`faithfulness`); `gradcam.overlay` draws a map over an image.
"""
