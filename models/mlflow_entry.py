"""The readiness pyfunc, for MLflow's models-from-code route.

``training.run`` logs this file as the model's code (``python_model=<this path>``):
MLflow copies it into the logged model and runs it when the model is loaded, so nothing
is pickled. The model's parameters travel as the artifact folder (JSON plus LightGBM
text files) that :class:`models.pyfunc.ReadinessPyfunc` reads in ``load_context``; the
``features`` and ``models`` packages travel as the model's code paths.
"""

import mlflow

from models.pyfunc import ReadinessPyfunc

mlflow.models.set_model(ReadinessPyfunc())
