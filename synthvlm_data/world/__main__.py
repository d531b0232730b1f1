import sys

from synthvlm_data.world.build_models import main

sys.exit(main())
