"""Aperture's engine: data, models, training jobs, evaluation, explanations, export. Never imports Streamlit.

Importing the package prepares the environment of TensorFlow (the oneDNN setting for
AVX-512 CPUs, `engine.cpu`) before anything can import TensorFlow.
"""

from engine.cpu import prepare_environment

prepare_environment()
