"""GARO: SGD (and AdamW) whose hyperparameters come from a GRU."""

from garo_optax._controller import ControllerParams as ControllerParams
from garo_optax._controller import init_controller as init_controller
from garo_optax._controller import load_controller as load_controller
from garo_optax._controller import save_controller as save_controller
from garo_optax._groups import ByGroup as ByGroup
from garo_optax._state import GaroAdamWState as GaroAdamWState
from garo_optax._state import GaroState as GaroState
from garo_optax._state import hyperparams as hyperparams
from garo_optax._transform import garo as garo
from garo_optax._transform import garo_adamw as garo_adamw

__version__ = "0.15.0"

__all__ = (
  "ByGroup",
  "ControllerParams",
  "GaroAdamWState",
  "GaroState",
  "garo",
  "garo_adamw",
  "hyperparams",
  "init_controller",
  "load_controller",
  "save_controller",
)
