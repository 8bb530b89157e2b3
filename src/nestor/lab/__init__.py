"""Labs: a tree of levels (switches, NATs, VMs, and VMs' own levels) described in one YAML file.

    file.py      read the YAML (safe loader) and validate it against schema.py (docs/lab.schema.json)
    spec.py      the lab as pure data: a Level holds switches, NATs and VMs; a VM may hold a Level
    observe.py   what each level reports (vm_list, switch_list, nat_list, adapter_list) as pure data
    plan.py      the diff of the file against the reports: create / change / remove / keep per level
    owners.py    which objects a lab made (the labs tables of the L0 database)
    up.py        reconcile a level tree to the plan, through one handle per level
    saving.py    save bottom-up / restore top-down of the whole tree (rule: policy.lab.save_order)
    levels.py    the handle of a level, to any depth (nestor.hypervisor.at)
    inventory.py addresses for Ansible or JSON

Preflight rules are pure and live in nestor.policy.lab.
"""
