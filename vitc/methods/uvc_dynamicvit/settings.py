"""``vitc compress uvc+dynamicvit`` settings: DynamicViT's, plus the distillation teacher."""

from __future__ import annotations

from dataclasses import dataclass

from vitc.core.settings import setting
from vitc.core.validation import check_model_ref
from vitc.methods.dynamicvit.settings import DynamicViTSettings


@dataclass(kw_only=True)
class UVCDynamicViTSettings(DynamicViTSettings):
    """Token selection on a UVC model: the keep ratio, sites and schedule of DynamicViT, and its teacher."""

    teacher: str | None = setting(None, metavar="ARTIFACT", parse=check_model_ref,
                                  help="Frozen distillation teacher: a dense artifact or timm name with the same input "
                                       "size, embedding width and classes (e.g. the original dense model). Default: the "
                                       "UVC model itself, as `vitc compress dynamicvit` distils from its own input.")
