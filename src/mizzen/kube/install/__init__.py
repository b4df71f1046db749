"""``mizzen install`` and friends, like istioctl's: the IstioOperator spec from Istio's profiles, files and
``--set`` (:mod:`.operator`), the objects rendered from it (:mod:`.manifests`, pure), and applying,
verifying and removing them on a cluster (:mod:`.apply`)."""
