import sys

from order_engine.cli import main
from order_engine.runtime import tune_gc

tune_gc()
sys.exit(main())
