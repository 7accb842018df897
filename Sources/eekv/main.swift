print("eekv")
