from rlobs._cli import main

raise SystemExit(main())
