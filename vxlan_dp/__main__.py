from vxlan_dp.cli import main

raise SystemExit(main())
