"""Explanations of single predictions. Importing this package is cheap; the methods import Keras when called."""
