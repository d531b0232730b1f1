import sys

from synthvlm_data.experiment.run import main

sys.exit(main())
