"""GARO: SGD whose learning rate, momentum and weight decay come from a GRU."""

from garo_optax._controller import ControllerParams as ControllerParams
from garo_optax._controller import init_controller as init_controller
from garo_optax._controller import load_controller as load_controller
from garo_optax._controller import save_controller as save_controller
from garo_optax._features import FEATURE_NAMES as FEATURE_NAMES
from garo_optax._features import FeatureState as FeatureState
from garo_optax._gru import GRUParams as GRUParams
from garo_optax._gru import gru_cell as gru_cell
from garo_optax._transform import GaroState as GaroState
from garo_optax._transform import garo as garo
from garo_optax._transform import hyperparams as hyperparams

__version__ = "0.1.0"

__all__ = (
  "FEATURE_NAMES",
  "ControllerParams",
  "FeatureState",
  "GRUParams",
  "GaroState",
  "garo",
  "gru_cell",
  "hyperparams",
  "init_controller",
  "load_controller",
  "save_controller",
)
