"""Names the study file and the command line choose from: data layouts and cell regions.

Plain strings, no numpy or pandas, so a study file is checked and `leukaug -h` is shown
without loading the readers or the image code; `leukaug.data.read` reads each layout and
`leukaug.data.regions.REGIONS` gives each region's images.
"""

from __future__ import annotations

KAGGLE = "cnmc_kaggle"  # the Kaggle mirror of C-NMC 2019
TCIA = "cnmc_tcia"  # the TCIA release
IMAGEFOLDER = "imagefolder"  # ROOT/{train,test[,val]}/{CLASS}/ (torchvision's ImageFolder)
LAYOUTS = ("auto", KAGGLE, TCIA, "folders", IMAGEFOLDER, "csv")

STAIN_NORMALIZATIONS = ("none", "macenko", "reinhard")  # [data] normalize (data.stain_norm)

QUADRANTS = ("top_left", "top_right", "bottom_left", "bottom_right")
NUCLEUS = "nucleus"
PERIMETER = "perimeter"
REGION_NAMES = (*QUADRANTS, NUCLEUS, PERIMETER)  # what one bagged member sees
